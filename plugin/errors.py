"""The root of GapBridge's own errors on the plugin side (connectors have theirs: ``connectors.base.ConnectorError``).

Each says what went wrong in words an operator can act on; the CLI prints one without a traceback.
"""


class GapBridgeError(Exception):
    """A fault GapBridge knows how to describe: configuration, mappings, start-up, leases, tokens, risk acceptances."""
