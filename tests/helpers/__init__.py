"""What the tests share, one home per concern (fixtures stay in tests/conftest.py):

- tiny_models: tiny random models (a small BPE tokenizer, a 2-layer Llama) saved as real model folders
- engines: the one tiny-engine factory (`make_engine`), `RecordingEngine`, `finished`, `repeating` (answers of
  several pieces, made deterministically)
- settings: `greedy` sampling settings and the `SHORT_ANSWER` length
- sessions: `seeded_session`, a chat session whose seeds come from the test's own name (`seeds_of_this_test`)
- stores: `as_if_abandoned`, a streaming answer's writer gone without waiting for it
- waiting: `wait_for`, the one way a test waits for something to come true
- workers: the generation worker threads a test can see (`generation_workers`)
- ports: 127.0.0.1 ports that refuse (`free_port`) or never answer (`silent_port`)
- apps: the app launched for a test, in this process (`running_app`) or as app.py (`AppProcess`)
- api_servers: uvicorn servers for the /v1 API and stand-ins that fail on cue
- clients: driving the running app through gradio_client and raw HTTP
- load_driver: many sessions chatting at once (tests/test_load.py and bench/load.py)
- browser: headless Chromium on the app's page
"""
