"""Images without a daemon: references, deterministic model layers, a registry client, assemble and promote.

``reference`` parses image references; ``layers`` turns a fetched model folder into byte-reproducible tar
layers, streamed and digested on the fly; ``registry`` speaks the distribution API (auth, blobs, manifests);
``assemble`` appends the model layers to an app image in its registry and tags tested digests (``promote``).
"""
