// swift-tools-version:6.1
// Freight's micro-benchmarks (package-benchmark). Run from this folder:
//   swift package benchmark
import PackageDescription

let package = Package(
    name: "FreightBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Freight", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "PatternTrie",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FreightDirectory", package: "Freight"),
            ],
            path: "Benchmarks/PatternTrie",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
