#!/usr/bin/python3
# The reference for Ferrum's root-device hints: the real ironic-lib (Debian python3-ironic-lib 5.3,
# with oslo.utils 6.0.1's specs matcher). Reads [{"devices": [...], "hints": {...}}, ...] as JSON
# on stdin and writes, for each case, {"names": [...]} (find_devices_by_hints, in order) or
# {"error": "<exception class>", "message": "..."} when ironic-lib raises, plus "parsed" (what
# parse_root_device_hints makes of the hints) or "parse_error".
import json
import logging
import sys

from ironic_lib import utils

logging.disable(logging.CRITICAL)


def run(case):
    try:
        found = utils.find_devices_by_hints(case['devices'], case['hints'])
        out = {'names': [d['name'] for d in found]}
    except Exception as e:  # ValueError, TypeError, SyntaxError, pyparsing.ParseException...
        out = {'error': type(e).__name__, 'message': str(e)}
    try:
        out['parsed'] = utils.parse_root_device_hints(case['hints'])
    except Exception as e:
        out['parse_error'] = type(e).__name__
    return out


def main():
    cases = json.load(sys.stdin)
    json.dump([run(c) for c in cases], sys.stdout)


if __name__ == '__main__':
    main()
