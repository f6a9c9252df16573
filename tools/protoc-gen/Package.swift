// swift-tools-version:6.1
// Builds the protoc plugins Freight's code generation uses (scripts/generate-protos.sh).
import PackageDescription

let package = Package(
    name: "FreightProtocPlugins",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    ],
    targets: [
        .executableTarget(
            name: "Placeholder",
            dependencies: [
                .product(name: "protoc-gen-swift", package: "swift-protobuf"),
                .product(name: "protoc-gen-grpc-swift-2", package: "grpc-swift-protobuf"),
            ]
        )
    ]
)
