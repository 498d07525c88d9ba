"""What every layer of zfwidgets uses: input checks, layer lookup, the image source, images and
their one decoder, the codec to the browser, progress, class names, checkpoints, atomic files.

Nothing here registers a hook or imports anywidget: ``base`` imports only torch, numpy, Pillow
and the standard library, and no other part of zfwidgets.
"""
