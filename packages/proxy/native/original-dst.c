/*
 * getsockopt(SO_ORIGINAL_DST) for Node.js, what Envoy's original_dst listener filter calls:
 * the destination a connection had before the pod's iptables REDIRECT rewrote it. One
 * system call on the accepted socket, no table to read, any UID (the kernel answers for the
 * caller's own socket). Built by scripts/build-native.sh when a C compiler is there; without
 * it the proxy reads the conntrack table instead (src/listener/original-dst.ts).
 *
 * originalDestination(fd) -> { address, port } | null
 *   null: the connection has no NAT entry (it was made to the proxy directly).
 *   Throws on other errors (not a socket, ...).
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: both 80. */
#define REMORA_SO_ORIGINAL_DST 80
#define REMORA_IP6T_SO_ORIGINAL_DST 80

static napi_value make_result(napi_env env, const char *address, int port) {
  napi_value out, a, p;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &a);
  napi_create_int32(env, port, &p);
  napi_set_named_property(env, out, "address", a);
  napi_set_named_property(env, out, "port", p);
  return out;
}

static napi_value original_destination(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value null_value;
  int32_t fd;
  napi_get_null(env, &null_value);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "originalDestination: a socket's file descriptor is required");
    return NULL;
  }
  struct sockaddr_storage local;
  socklen_t local_len = sizeof(local);
  memset(&local, 0, sizeof(local));
  if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  int v6 = local.ss_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr);
  struct sockaddr_storage dst;
  socklen_t dst_len = sizeof(dst);
  memset(&dst, 0, sizeof(dst));
  int rc = v6 ? getsockopt(fd, SOL_IPV6, REMORA_IP6T_SO_ORIGINAL_DST, &dst, &dst_len)
              : getsockopt(fd, SOL_IP, REMORA_SO_ORIGINAL_DST, &dst, &dst_len);
  if (rc != 0) {
    if (errno == ENOENT || errno == ENOPROTOOPT || errno == EOPNOTSUPP) return null_value;
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  if (dst.ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&dst;
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) == NULL) return null_value;
    return make_result(env, text, ntohs(in->sin_port));
  }
  if (dst.ss_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&dst;
    if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)) == NULL) return null_value;
    return make_result(env, text, ntohs(in6->sin6_port));
  }
  return null_value;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "originalDestination", NAPI_AUTO_LENGTH, original_destination, NULL, &fn);
  napi_set_named_property(env, exports, "originalDestination", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
