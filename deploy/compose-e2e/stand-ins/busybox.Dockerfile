# Stands in for busybox:1.37-musl (volume-owners' chown, the wget of VictoriaLogs' health
# check): Debian's static busybox, its applets linked into /bin.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
