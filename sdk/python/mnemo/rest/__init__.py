"""The REST API's JSON contract, one module per resource: the gateway serves these shapes, the client
parses them. Change them only compatibly."""
