"""Former home of consume's serving code, now split by idea: stages.consume_ws (fan-out),
stages.consume_http (the API), stages.consume_auth (token, Origin, limits), stages.consume_listeners
(the two listeners). These re-exports keep old imports (hazardctl/cli.py) working until they move."""

from stages.consume_auth import AccessPolicy, Guard, load_token, parse_origins, select_subprotocol
from stages.consume_http import HttpApi, HttpResponse, load_page
from stages.consume_listeners import start_http, websocket_port_http
from stages.consume_ws import Client, Hub, parse_cameras, subscription_json

__all__ = ["AccessPolicy", "Client", "Guard", "HttpApi", "HttpResponse", "Hub", "load_page", "load_token",
           "parse_cameras", "parse_origins", "select_subprotocol", "start_http", "subscription_json",
           "websocket_port_http"]
