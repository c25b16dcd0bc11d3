"""voicebot: multilingual customer-service bots over WebRTC voice and websocket chat."""

__version__ = "0.1.0"
