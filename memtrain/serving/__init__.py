"""The parts of ``memtrain serve`` (the config and the entry point are :mod:`memtrain.serve`).

- :mod:`~memtrain.serving.protocol`: the OpenAI wire protocol: errors, request validation, stop sequences,
  stream pieces (pure functions).
- :mod:`~memtrain.serving.batcher`: one worker thread coalescing concurrent conversations into batched
  ``generate`` calls, a bounded queue, per-request deadlines, and the engine adapter the memory loop uses.
- :mod:`~memtrain.serving.memory`: the server-side memory agent.
- :mod:`~memtrain.serving.http`: the ASGI app on uvicorn (shared with ``memtrain retriever serve``): routes,
  authentication, limits (body size, timeouts, concurrency), JSON and SSE responses.
"""
