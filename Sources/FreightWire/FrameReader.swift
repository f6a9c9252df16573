import NIOCore

/// Reads frames from a channel's bytes through ``FrameParser``. A parse error is fired down the pipeline (the
/// connection handler closes that one connection); nothing is read after it.
///
/// Events go to `deliver` when it is set (the connection's own handler, called directly), else down the pipeline.
/// The direct call saves SwiftNIO's `NIOAny` box and the dynamic casts in and out of it for every event: about
/// 5,500 instructions a message on the node-to-node path at 64 KiB (callgrind, docs/performance.md).
public final class FrameReader: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ParserEvent
    private var parser: FrameParser
    private var failed = false
    private let deliver: ((ParserEvent) -> Void)?

    public init(
        limits: FrameLimits = FrameLimits(), expectPreface: Bool = true, deliver: ((ParserEvent) -> Void)? = nil
    ) {
        self.parser = FrameParser(limits: limits, expectPreface: expectPreface)
        self.deliver = deliver
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        do {
            if let deliver {
                try parser.feedEvents(buffer, emit: deliver)
            } else {
                try parser.feedEvents(buffer) { event in
                    context.fireChannelRead(wrapInboundOut(event))
                }
            }
        } catch {
            failed = true
            context.fireErrorCaught(error)
        }
    }
}
