// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Freight",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "freight", targets: ["freight"]),
        // The packet-level WAN emulator of the tests and of scripts/wan.sh (docs/wan.md).
        .executable(name: "freight-wan", targets: ["freight-wan"]),
        .library(name: "FreightClient", targets: ["FreightClient"]),
        .library(name: "FreightNode", targets: ["FreightNode"]),
        .library(name: "FreightTesting", targets: ["FreightTesting"]),
        .library(name: "FreightDirectory", targets: ["FreightDirectory"]),
        // For Fuzz/ (libFuzzer targets of the parsers) and other tools outside this package.
        .library(name: "FreightFuzzing", targets: ["FreightFuzzing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // OTLP over gRPC only: the gRPC stack is here already, and OTLP/HTTP would bring async-http-client.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPGRPC"]),
        // WebAssembly filters and functions (docs/functions.md): the runtime, and its WAT assembler.
        .package(url: "https://github.com/swiftwasm/WasmKit.git", from: "0.4.2"),
    ],
    targets: [
        .target(name: "FreightCore", swiftSettings: strict),
        .target(name: "CFreightCRC32C"),
        .target(name: "CFreightSystem"),
        .target(
            name: "FreightWire",
            dependencies: [
                "FreightCore", "CFreightCRC32C",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        // One direction of an emulated WAN link as pure state (docs/wan.md).
        .target(name: "FreightWAN", dependencies: ["FreightCore", "CFreightSystem"], swiftSettings: strict),
        .executableTarget(
            name: "freight-wan",
            dependencies: [
                "FreightCore", "FreightWAN", "CFreightSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .target(name: "FreightDirectory", dependencies: ["FreightCore", "FreightWire"], swiftSettings: strict),
        .target(
            name: "FreightRouting", dependencies: ["FreightCore", "FreightDirectory", "FreightWire"],
            swiftSettings: strict),
        // Flows as a pure state machine (docs/core.md): no NIO beyond the frame types, no clock, no I/O.
        .target(
            name: "FreightFlow", dependencies: ["FreightCore", "FreightDirectory", "FreightWire"], swiftSettings: strict
        ),
        // Node identities: the cluster's certificate authority and mutual TLS on node links (docs/hardening.md).
        .target(
            name: "FreightSecurity",
            dependencies: [
                "FreightCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FreightTransport",
            dependencies: [
                "FreightCore", "FreightWire", "FreightSecurity", "CFreightSystem",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The parsers' fuzz targets as plain functions: Fuzz/ (libFuzzer) and FuzzCorpusTests call them.
        .target(
            name: "FreightFuzzing",
            dependencies: [
                "FreightCore", "FreightWire", "FreightTransport", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .target(
            name: "FreightNode",
            dependencies: [
                "FreightCore", "FreightWire", "FreightDirectory", "FreightRouting", "FreightTransport", "FreightFlow",
                "FreightSecurity", "FreightFunctions",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        // WebAssembly filters and function endpoints on WasmKit (docs/functions.md): ABI v1, fuel and memory limits.
        .target(
            name: "FreightFunctions",
            dependencies: [
                "FreightCore",
                .product(name: "WasmKit", package: "WasmKit"),
                .product(name: "WAT", package: "WasmKit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The CUDA driver API loaded at run time (docs/gpu.md): no build-time dependency on CUDA.
        .target(name: "FreightCUDA", dependencies: ["FreightCore", "CFreightSystem"], swiftSettings: strict),
        // Function endpoints at a node (docs/functions.md): deploys, module copies, instances on demand.
        .target(
            name: "FreightFunctionHost",
            dependencies: [
                "FreightCore", "FreightNode", "FreightClient", "FreightFunctions", "FreightDirectory",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The admin port (docs/observability.md): /metrics (swift-prometheus), /healthz and /readyz, on Hummingbird.
        .target(
            name: "FreightAdmin",
            dependencies: [
                "FreightCore", "FreightNode", "FreightWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FreightClient",
            dependencies: [
                "FreightCore", "FreightWire", "FreightTransport", "CFreightSystem", "FreightCUDA",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FreightGRPC",
            dependencies: [
                "FreightCore", "FreightNode", "FreightClient", "FreightTransport", "FreightFunctions",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FreightEtcd",
            dependencies: [
                "FreightCore", "FreightDirectory", "FreightWire",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FreightTesting",
            dependencies: [
                "FreightCore", "CFreightSystem", "FreightWAN", "FreightNode", "FreightSecurity", "FreightClient",
                "FreightTransport",
                "FreightDirectory", "FreightWire", "FreightRouting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "freight",
            dependencies: [
                "FreightCore", "FreightNode", "FreightClient", "FreightWire", "FreightTransport", "FreightTesting",
                "FreightGRPC", "FreightEtcd", "FreightRouting", "FreightSecurity", "FreightWAN", "FreightAdmin",
                "FreightFunctions", "FreightFunctionHost", "FreightDirectory", "FreightCUDA",
                .product(name: "WAT", package: "WasmKit"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "FreightCoreTests", dependencies: ["FreightCore"], swiftSettings: strict),
        .testTarget(
            name: "FreightCUDATests", dependencies: ["FreightCUDA", "FreightCore", "FreightTesting"],
            swiftSettings: strict),
        .testTarget(
            name: "FreightFunctionsTests", dependencies: ["FreightFunctions", "FreightCore", "FreightWire"],
            swiftSettings: strict),
        .testTarget(name: "FreightWANTests", dependencies: ["FreightWAN", "FreightCore"], swiftSettings: strict),
        .testTarget(
            name: "FreightSecurityTests",
            dependencies: [
                "FreightSecurity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FreightWireTests",
            dependencies: [
                "FreightFuzzing",
                "FreightWire", "FreightCore", "FreightTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FreightFlowTests",
            dependencies: ["FreightFlow", "FreightWire", "FreightDirectory", "FreightCore"], swiftSettings: strict),
        .testTarget(
            name: "FreightDirectoryTests", dependencies: ["FreightDirectory", "FreightCore", "FreightWire"],
            swiftSettings: strict),
        .testTarget(
            name: "FreightRoutingTests",
            dependencies: ["FreightRouting", "FreightDirectory", "FreightCore", "FreightWire"],
            exclude: ["Fixtures"], swiftSettings: strict),
        .testTarget(
            name: "FreightNodeTests",
            dependencies: [
                "FreightTesting", "FreightClient", "FreightNode", "FreightCore", "FreightWire", "FreightTransport",
                "FreightCUDA",
                "FreightGRPC", "FreightAdmin", "FreightFlow",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FreightEtcdTests",
            dependencies: [
                "FreightEtcd", "FreightDirectory", "FreightCore", "FreightWire",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "FreightIntegrationTests",
            dependencies: [
                "FreightTesting", "FreightClient", "FreightNode", "FreightCore", "FreightTransport", "FreightWire",
            ],
            swiftSettings: strict
        ),
    ]
)
