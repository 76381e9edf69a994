"""hazardctl: real-time dangerous-scene detection for traffic cameras.

Stages (detect → expand → schedule → consume) are separate processes joined by Kafka topics or
Unix pipes of JSON lines; this package is the CLI and the shared core they all use.
"""

__version__ = "0.1.0"
