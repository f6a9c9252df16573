// swift-tools-version:6.1
// Builds the protoc plugins Freight's code generation uses (scripts/generate-protos.sh).
import PackageDescription

let package = Package(
    name: "FreightProtocPlugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0")
    ],
    targets: [
        .executableTarget(
            name: "Placeholder",
            dependencies: [.product(name: "protoc-gen-swift", package: "swift-protobuf")]
        )
    ]
)
