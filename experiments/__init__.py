"""The studies. Each is run as a script (``python experiments/<study>/<script>.py``); the
folders are packages only so that the tests import the scripts by name. What the
studies share lives in the library (``ficklenet.analysis``)."""
