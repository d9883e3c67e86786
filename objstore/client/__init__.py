"""Send and receive object graphs over Speckle's object routes, with a local objstore cache."""

from objstore.client.remote import Remote, RemoteStats
from objstore.client.transfer import ReceiveResult, SendResult, receive, send

__all__ = ["ReceiveResult", "Remote", "RemoteStats", "SendResult", "receive", "send"]
