"""vLLM (`vllm serve`): the engine for NVIDIA GPUs, with tensor and pipeline parallelism."""
