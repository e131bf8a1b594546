#!/usr/bin/env bash
# Runs the infrastructure the services need: Kafka and a MongoDB-wire store.
# Usage: deploy/infra.sh up|down|status
# Where a Docker engine answers (or CASEREVIEW_INFRA=docker), docker compose runs the pinned
# images; otherwise (CASEREVIEW_INFRA=native, or no engine) the native scripts run them here.
# CASEREVIEW_KAFKA_BOOTSTRAP / CASEREVIEW_MONGO_URL point at existing servers instead.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SERVICE_NAME=infra

mode=${CASEREVIEW_INFRA:-auto}
if [ "$mode" = auto ]; then
  if command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; then
    mode=docker
  else
    mode=native
  fi
fi

action=${1:-status}
case "$mode:$action" in
  docker:up)
    docker compose -f "$REPO_ROOT/docker-compose.yml" up -d --wait kafka mongo ;;
  docker:down)
    docker compose -f "$REPO_ROOT/docker-compose.yml" stop kafka mongo ;;
  docker:status)
    docker compose -f "$REPO_ROOT/docker-compose.yml" ps kafka mongo ;;
  native:up)
    bash "$REPO_ROOT/deploy/kafka/kafka.sh" up
    bash "$REPO_ROOT/deploy/ferretdb/ferretdb.sh" up ;;
  native:down)
    rc=0
    bash "$REPO_ROOT/deploy/ferretdb/ferretdb.sh" down || rc=$?
    bash "$REPO_ROOT/deploy/kafka/kafka.sh" down || rc=$?
    exit $rc ;;
  native:status)
    rc=0
    bash "$REPO_ROOT/deploy/kafka/kafka.sh" status || rc=$?
    bash "$REPO_ROOT/deploy/ferretdb/ferretdb.sh" status || rc=$?
    exit $rc ;;
  *)
    die "usage: deploy/infra.sh up|down|status (CASEREVIEW_INFRA=auto|docker|native)" ;;
esac
