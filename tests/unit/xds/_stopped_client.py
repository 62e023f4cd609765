"""A gRPC client for test_send_budget.py: one stream with a 256 MiB window (like Envoy's xDS client)
that reads everything; the test stops this process (SIGSTOP) so that it stops reading its socket."""

import asyncio
import sys

import grpc


def _identity(b: bytes) -> bytes:
    return b


async def main() -> None:
    channel = grpc.aio.insecure_channel(sys.argv[1], options=[("grpc.http2.lookahead_bytes", 256 * 1024 * 1024),
                                                              ("grpc.http2.bdp_probe", 0),
                                                              ("grpc.max_receive_message_length", -1)])
    call = channel.stream_stream("/probe.Probe/Stream", request_serializer=_identity,
                                 response_deserializer=_identity)()
    await call.write(b"go")
    print("ready", flush=True)
    while await call.read() is not grpc.aio.EOF:
        pass


asyncio.run(main())
