"""``semalign watch``: a terminal dashboard of both daemons' monitor streams that also steers TX.

``state`` is the model (pure, no terminal), ``source`` the ZeroMQ subscriber and its twin,
``app`` the Textual application, ``cli`` the command.
"""
