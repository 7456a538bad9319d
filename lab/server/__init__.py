"""ServeLab's emulator server: vLLM's OpenAI-compatible API in front of the engine simulator.

``servelab serve MODEL --gpu G`` starts it. Each HTTP request joins a simulated vLLM engine that
runs against the wall clock, so its first token and each next token arrive when the simulation
says; ``/metrics`` exports vLLM's series and the HTTP series the course's analyses query.

Modules: ``tokenizer`` (words <-> ids), ``questions`` (the built-in question set), ``faults``
(fault specs and their effects), ``metrics`` (Prometheus), ``runner`` (the simulation driven by
the wall clock), ``protocol`` (request and response shapes, errors), ``app`` (the routes).
"""
