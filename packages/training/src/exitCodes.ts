/**
 * Exit statuses of the worker program that the coordinator (which starts local workers) and
 * service managers act on, so both sides read them from one place.
 */

/**
 * The exit status of a worker whose coordinator stopped before the job finished (a clean
 * shutdown, to be resumed): 75, EX_TEMPFAIL in sysexits.h, "try again later". Exit 0 means the
 * job is done, so a service manager can restart a worker on failure only (systemd's
 * `Restart=on-failure`) and still have it rejoin a resumed run.
 */
export const EXIT_COORDINATOR_STOPPED = 75;
