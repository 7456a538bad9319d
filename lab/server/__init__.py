"""ServeLab's emulator server: vLLM's OpenAI-compatible API in front of the engine simulator.

``servelab serve MODEL --gpu G`` starts it. Each HTTP request joins a simulated vLLM engine that
runs against the wall clock, so its first token and each next token arrive when the simulation
says; ``/metrics`` exports vLLM's series and the HTTP series the course's analyses query.

Modules: ``tokenizer`` (words <-> ids), ``hf_tokenizer`` (``--tokenizer DIR``), ``questions``
(the built-in question set), ``generation`` (each answer's words), ``stops`` (stop strings and
stop tokens), ``logprobs`` (the words' log-probabilities), ``cache_info`` (the labels of
``vllm:cache_config_info``), ``faults`` (fault specs and their effects), ``metrics``
(Prometheus), ``lag`` (each token's lateness, exported and logged), ``runner`` (the simulation
driven by the wall clock, releasing tokens at their due times), ``delivery`` (one writer per
request), ``protocol`` (request and response shapes, errors), ``app`` (the routes).
"""
