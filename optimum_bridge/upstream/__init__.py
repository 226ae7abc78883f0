"""The Optimum API as the bridge meets it: the identity server, the shared token, the HTTP client and
the OpenAPI document.
"""
