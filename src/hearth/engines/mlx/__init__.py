"""MLX (`mlx_lm.server`) and MLX-VLM: the engines for Apple silicon."""
