# The image installs exactly what uv.lock says (versions and hashes), as scripts/setup does.
FROM python:3.11-slim AS build
WORKDIR /src
COPY scripts/requirements/uv.txt ./uv.txt
RUN pip install --no-cache-dir --no-deps --require-hashes -r uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY notifier ./notifier
COPY lua ./lua
# the locked dependencies (with the speed extra: uvloop) as a hashed requirements file, and
# notifier's own wheel, built by the pinned hatchling
RUN uv export --locked --no-dev --extra speed --no-emit-project --format requirements-txt \
      -o /wheels/requirements.txt \
 && uv build --wheel --out-dir /wheels

FROM python:3.11-slim
RUN useradd --system --uid 10001 notifier
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --require-hashes -r /wheels/requirements.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && rm -rf /wheels
USER notifier
ENV NOTIFIER_API_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["notifier"]
CMD ["run"]
