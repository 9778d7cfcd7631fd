"""The bytes on the wire: the payload layout and the msgpack frames beside it. No torch, no zmq."""
