// The package exists to build protoc-gen-swift.
