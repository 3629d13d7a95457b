"""Product services: the use cases of the web and worker tiers.

They take what they need as arguments (sessions, connections, the cache, the queue, storage) and
never import FastAPI or Starlette; routes and worker tasks call them.
"""
