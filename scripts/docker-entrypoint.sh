#!/bin/sh
# One image, every process: the first argument picks what this container runs.
#
#   web            gunicorn on 0.0.0.0:$PORT (default)
#   worker         a Celery worker node celery@$HOSTNAME consuming $WORKER_QUEUES
#   beat           the Celery beat scheduler (run exactly one), answering pings as celerybeat@$HOSTNAME
#   migrate        python manage.py migrate --noinput
#   manage ARGS    any manage.py command, e.g. `manage check --deploy`
#   anything else  exec'd as given (sh, python, celery ...)
#
# Extra arguments after web/worker/beat are passed on to gunicorn/celery. Every server is exec'd,
# so it receives SIGTERM itself (tini, PID 1, forwards it) and shuts down gracefully:
# gunicorn finishes in-flight requests within --graceful-timeout, a Celery worker finishes its running
# tasks (warm shutdown), beat writes its jobs' last runs.
set -eu

: "${HOSTNAME:=$(hostname)}"
# Unset or empty, DJANGO_ENV is production here (as in the image's ENV and in payments_project/env.py):
# a manifest that drops or blanks it gets the production guard, never development defaults.
: "${DJANGO_ENV:=production}"
export DJANGO_ENV

# Prometheus multi-process mode: gunicorn workers and Celery pool processes write their samples under
# PROMETHEUS_MULTIPROC_DIR, which must start empty. Only the servers own it; one-off commands
# (migrate, manage, a shell) must neither wipe it nor leave files of their own in it.
reset_metrics_dir() {
    if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
        rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"
        mkdir -p "${PROMETHEUS_MULTIPROC_DIR}"
    fi
}

command="${1:-web}"
[ "$#" -gt 0 ] && shift

case "${command}" in
web)
    reset_metrics_dir
    # --threads > 1 selects the gthread worker: a slow Stripe call holds one thread, not a process.
    # --keep-alive above the load balancer's idle timeout (60 s is common), so the proxy never reuses
    # a connection gunicorn is closing. Its access and error lines are the application's JSON (JsonLogger).
    exec gunicorn payments_project.wsgi:application \
        --bind "0.0.0.0:${PORT:-8000}" \
        --workers "${GUNICORN_WORKERS:-2}" \
        --threads "${GUNICORN_THREADS:-4}" \
        --timeout "${GUNICORN_TIMEOUT:-30}" \
        --graceful-timeout "${GUNICORN_GRACEFUL_TIMEOUT:-30}" \
        --keep-alive "${GUNICORN_KEEPALIVE:-75}" \
        --max-requests "${GUNICORN_MAX_REQUESTS:-0}" \
        --max-requests-jitter "${GUNICORN_MAX_REQUESTS_JITTER:-0}" \
        --worker-tmp-dir /tmp \
        --logger-class payments_project.gunicorn_logging.JsonLogger \
        --access-logfile - \
        --error-logfile - \
        "$@"
    ;;
worker)
    reset_metrics_dir
    # celery@$HOSTNAME: unique per pod. The liveness probe checks the heartbeat file's age, which the
    # worker keeps fresh while its event loop turns and while it waits for the broker.
    # Task time limits come from settings (CELERY_TASK_TIME_LIMIT); a SIGTERM waits for running tasks.
    exec celery -A payments_project worker \
        --hostname "celery@${HOSTNAME}" \
        --queues "${WORKER_QUEUES:-default}" \
        --concurrency "${WORKER_CONCURRENCY:-2}" \
        --max-tasks-per-child "${WORKER_MAX_TASKS_PER_CHILD:-1000}" \
        --without-gossip \
        --without-mingle \
        --heartbeat-file /tmp/worker-heartbeat \
        --loglevel "${LOG_LEVEL:-INFO}" \
        "$@"
    ;;
beat)
    unset PROMETHEUS_MULTIPROC_DIR
    # The schedule and each job's last run live in the database (payments_project.beat.Scheduler, which
    # syncs the code's schedule in first), so a recreated pod keeps them. With remote control on, beat
    # answers `celery inspect ping` as celerybeat@$HOSTNAME, and stops answering once its scheduler has not
    # ticked for twice --max-interval: the liveness probe's signal.
    exec celery -A payments_project beat \
        --scheduler payments_project.beat:Scheduler \
        --max-interval "${BEAT_MAX_INTERVAL:-60}" \
        --enable-remote-control \
        --hostname "celerybeat@${HOSTNAME}" \
        --loglevel "${LOG_LEVEL:-INFO}" \
        "$@"
    ;;
migrate)
    unset PROMETHEUS_MULTIPROC_DIR
    # The longest PostgreSQL timeouts (settings: DATABASE_SESSION_TIMEOUTS).
    export PROCESS_KIND=migrate
    exec python manage.py migrate --noinput "$@"
    ;;
manage)
    unset PROMETHEUS_MULTIPROC_DIR
    exec python manage.py "$@"
    ;;
*)
    exec "${command}" "$@"
    ;;
esac
