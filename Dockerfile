# One image for every mnemo process; pick the service with the command, e.g. `mnemo_memory`.
#   docker build -t mnemo . && docker run -p 8283:8283 mnemo mnemo_gateway
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir uv==0.13.8
COPY pyproject.toml uv.lock README.md ./
COPY protos ./protos
COPY sdk ./sdk
COPY libs ./libs
COPY services ./services
COPY gateway ./gateway
COPY server ./server
# The three wheels (mnemo-protos generates its stubs while it builds) and the locked third-party requirements.
RUN uv build --all-packages --wheel -o /dist \
 && uv export --frozen --no-dev --no-emit-workspace --no-hashes -o /dist/requirements.txt

FROM python:3.11-slim
RUN useradd --uid 10001 --user-group --create-home mnemo \
 && mkdir -p /var/lib/mnemo && chown mnemo:mnemo /var/lib/mnemo
COPY --from=build /dist /dist
RUN pip install --no-cache-dir -r /dist/requirements.txt \
 && pip install --no-cache-dir --no-deps /dist/*.whl \
 && rm -rf /dist
USER 10001
ENV MNEMO_HOME=/var/lib/mnemo PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8283 8284 8285 8286 8287
ENTRYPOINT ["python", "-m"]
CMD ["mnemo_gateway"]
