"""Bus seam: work messages with at-least-once delivery (embedded in the state store, or RabbitMQ)."""

from flowbus.bus.base import Bus, Consumer, DeadLetter, Handler, Message, Retry

__all__ = ["Bus", "Consumer", "DeadLetter", "Handler", "Message", "Retry"]
