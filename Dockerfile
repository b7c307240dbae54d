# The specdeploy operator image; it also runs the vLLM-compatible simulator (`specdeploy sim-server`).
# Build: docker build -t ghcr.io/specdeploy/specdeploy:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# No compilers or build tools in the final stage: only the wheels.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root; any UID works (OpenShift's restricted-v2 assigns one), group 0 as OpenShift expects.
USER 10001:0
EXPOSE 8080
ENTRYPOINT ["specdeploy"]
CMD ["run"]
