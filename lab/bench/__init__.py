"""Running and printing vLLM-style benchmarks of the simulator."""
