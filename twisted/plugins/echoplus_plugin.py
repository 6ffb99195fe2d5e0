"""
The twistd dropin: C{twistd echoplus}.
"""

from twisted.application.service import ServiceMaker

echoplus = ServiceMaker(
    "echoplus",
    "echoplus.tap",
    "Framed socket server whose features are processor components",
    "echoplus",
)
