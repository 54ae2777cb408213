# The HA labs' echo server (scripts/demo-ha.sh, control/tests/lab_vrrp.rs): on port 8080,
# each line comes back prefixed with the server address it reached.
import socket, threading
def serve(c):
    me = c.getsockname()[0].encode()
    try:
        for line in c.makefile('rb'):
            c.sendall(me + b' ' + line)
    except OSError:
        pass
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080)); s.listen(256)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
