"""Using a trained checkpoint.

loading.py        load_for_inference: the model (sharded over TP if asked) and its tokenizer
generate.py       sampling parameters, KV-cache decoding of rows, NeMo-style responses
batcher.py        one thread that owns the model and decodes the rows of concurrent requests
serve.py          the HTTP server (NeMo's PUT /generate, OpenAI's /v1/completions)
openai_api.py     the OpenAI-style routes' request parsing and response building
api_common.py     the request error (and its OpenAI shape) both HTTP APIs share
fill_mask.py      mT5 span filling
evaluate.py       split perplexity and LAMBADA
lm_eval_model.py  the `dataprep` model of lm-evaluation-harness (registered on import)
"""
