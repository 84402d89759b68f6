"""Images without a daemon: references, deterministic model layers, a registry client, one image writer.

``reference`` parses image references; ``layers`` turns a model folder into byte-reproducible tar layers,
streamed and digested on the fly; ``tarread`` reads untrusted tar layers strictly. The registry client is
three layers: ``auth`` (credentials, docker config, challenge, tokens, ACR's exchange), ``transport``
(session, errors, retries) and ``registry`` (blobs, manifests, tags, referrers); ``remote`` reads an image's
labels without pulling it. ``write`` is the one image writer (image values; HEAD/mount, upload the missing
blobs, PUT by digest, tag, verify): ``_assemble`` (the model's layers on an app image) and ``modelimage`` (the
model as its own image) are plans it executes, ``_copy`` hands it another repository's manifests byte for byte,
``_promote`` only tags; ``_ls`` lists a repository's tags with their model versions.
"""
