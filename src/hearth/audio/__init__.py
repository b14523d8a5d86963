"""Audio uploads for transcription: decoded and checked at the gateway, sent to engines as 16 kHz
mono WAV."""
