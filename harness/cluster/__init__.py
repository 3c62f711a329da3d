"""What else a node runs on the client's path, built per node: today the MariaDB server of the
job-to-mysql scenario (``mariadb``)."""
