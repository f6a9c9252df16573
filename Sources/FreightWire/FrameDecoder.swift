import NIOCore

/// `ByteToMessageDecoder` over ``FrameParser``: emits ``Frame``s; a parse error is fired down the pipeline and the
/// connection's handler closes that connection.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame
    private var parser: FrameParser

    public init(limits: FrameLimits = FrameLimits(), expectPreface: Bool = true) {
        self.parser = FrameParser(limits: limits, expectPreface: expectPreface)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try parser.next(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
