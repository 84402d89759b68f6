"""Images without a daemon: references, deterministic model layers, a registry client, assemble and promote.

``reference`` parses image references; ``layers`` turns a fetched model folder into byte-reproducible tar
layers, streamed and digested on the fly; ``tarread`` reads untrusted tar layers strictly. The registry
client is three layers: ``auth`` (credentials, docker config, challenge, tokens, ACR's exchange),
``transport`` (session, errors, retries) and ``registry`` (blobs, manifests, tags, referrers); ``remote``
reads an image's labels without pulling it. ``_assemble`` appends the model layers to an app image in its
registry and tags tested digests (``promote``); ``modelimage`` publishes and reads model images.
"""
