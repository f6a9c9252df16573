import NIOCore

/// Reads frames from a channel's bytes through ``FrameParser``. A parse error is fired down the pipeline (the
/// connection handler closes that one connection); nothing is read after it.
public final class FrameReader: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ParserEvent
    private var parser: FrameParser
    private var failed = false

    public init(limits: FrameLimits = FrameLimits(), expectPreface: Bool = true) {
        self.parser = FrameParser(limits: limits, expectPreface: expectPreface)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        do {
            try parser.feedEvents(buffer) { event in
                context.fireChannelRead(wrapInboundOut(event))
            }
        } catch {
            failed = true
            context.fireErrorCaught(error)
        }
    }
}
