"""natsrouter: routes jobs to providers over NATS and JetStream, and keeps working while NATS
fails."""

from natsrouter.config import Settings, load_settings
from natsrouter.errors import ConfigError, LinkError, NatsRouterError, Reason
from natsrouter.link import ConnectionState, Link, Outcome, Result

__all__ = [
    "ConfigError",
    "ConnectionState",
    "Link",
    "LinkError",
    "NatsRouterError",
    "Outcome",
    "Reason",
    "Result",
    "Settings",
    "load_settings",
]
__version__ = "0.1.0"
