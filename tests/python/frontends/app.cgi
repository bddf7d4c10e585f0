#!/bin/sh
# The CGI script mod_cgi runs: ferrule answers the one request in its
# environment. The paths and the application are filled in by
# tests/python/gateways.py.
exec {ferrule} --cgi --chdir {apps} {app}
