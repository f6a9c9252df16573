// swift-tools-version:6.1
// libFuzzer targets of Freight's parsers: the frame parser, the descriptor-link codec and the control payloads.
// Built and run by scripts/fuzz.sh (with -sanitize=fuzzer, which the ordinary build does not use).
import PackageDescription

let package = Package(
    name: "FreightFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Freight", path: "..")],
    targets: [
        .executableTarget(
            name: "FreightFuzz",
            dependencies: [.product(name: "FreightFuzzing", package: "Freight")],
            swiftSettings: [.swiftLanguageMode(.v6), .unsafeFlags(["-parse-as-library"])],
            linkerSettings: [.unsafeFlags(["-Xlinker", "--allow-multiple-definition"])]
        )
    ]
)
