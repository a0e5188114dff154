/*
 * srp-hold: a minimal userspace SRP login over RDMA/CM that keeps its
 * channel open and prints the RDMA/CM events it gets, until the connection
 * ends (DISCONNECTED, DEVICE_REMOVAL...) or a timeout. It then frees its
 * resources and exits 0 (2 on a login failure).
 *
 * Used by tests/vm/srptd-srq.sh to hold a live srptd channel while the
 * device is removed: the kernel initiator on the same device is removed
 * first and disconnects before the target sees DEVICE_REMOVAL, a userspace
 * peer is not.
 *
 *   srp-hold <addr> <port> <id_ext hex> [timeout_s]
 *   Build: cc -O2 -o srp-hold srp-hold.c -lrdmacm -libverbs
 */
#include <arpa/inet.h>
#include <endian.h>
#include <rdma/rdma_cma.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>

static int wait_event(struct rdma_event_channel *ec, enum rdma_cm_event_type want,
		      struct rdma_cm_event **out)
{
	struct rdma_cm_event *ev;

	if (rdma_get_cm_event(ec, &ev)) {
		perror("rdma_get_cm_event");
		return -1;
	}
	printf("event %s status %d\n", rdma_event_str(ev->event), ev->status);
	fflush(stdout);
	if (ev->event != want) {
		rdma_ack_cm_event(ev);
		return -1;
	}
	if (out)
		*out = ev;
	else
		rdma_ack_cm_event(ev);
	return 0;
}

int main(int argc, char **argv)
{
	struct rdma_event_channel *ec;
	struct rdma_cm_id *id;
	struct rdma_cm_event *ev;
	struct sockaddr_in dst = { .sin_family = AF_INET };
	struct ibv_qp_init_attr qa = {
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct rdma_conn_param cp = { 0 };
	unsigned char login[56] = { 0 };
	uint64_t id_ext, v;
	int timeout_ms;

	if (argc < 4) {
		fprintf(stderr, "usage: %s <addr> <port> <id_ext hex> [timeout_s]\n", argv[0]);
		return 2;
	}
	inet_pton(AF_INET, argv[1], &dst.sin_addr);
	dst.sin_port = htons(atoi(argv[2]));
	id_ext = strtoull(argv[3], NULL, 16);
	timeout_ms = (argc > 4 ? atoi(argv[4]) : 120) * 1000;

	ec = rdma_create_event_channel();
	if (!ec || rdma_create_id(ec, &id, NULL, RDMA_PS_TCP)) {
		perror("rdma_create_id");
		return 2;
	}
	if (rdma_resolve_addr(id, NULL, (struct sockaddr *)&dst, 5000) ||
	    wait_event(ec, RDMA_CM_EVENT_ADDR_RESOLVED, NULL) ||
	    rdma_resolve_route(id, 5000) ||
	    wait_event(ec, RDMA_CM_EVENT_ROUTE_RESOLVED, NULL)) {
		fprintf(stderr, "address/route resolution failed\n");
		return 2;
	}
	if (rdma_create_qp(id, NULL, &qa)) {
		perror("rdma_create_qp");
		return 2;
	}
	/* srp_login_req_rdma: tag, req_buf_fmt, req_flags, opcode,
	 * req_it_iu_len, initiator port id, target port id, imm_data_offset. */
	v = htobe64(1);
	memcpy(login, &v, 8);
	login[9] = 0x06;	/* direct and indirect descriptors */
	login[10] = 0x01;	/* MULTI-CHANNEL ACTION: independent */
	login[11] = 0x00;	/* SRP_LOGIN_REQ */
	login[14] = 0x01;	/* it_iu_len 256 */
	memset(login + 16, 0x5a, 16);	/* initiator port id */
	v = htobe64(id_ext);
	memcpy(login + 32, &v, 8);	/* target port id: id_ext, ioc_guid */
	memcpy(login + 40, &v, 8);
	cp.private_data = login;
	cp.private_data_len = sizeof(login);
	cp.responder_resources = 4;
	cp.initiator_depth = 4;
	cp.retry_count = 7;
	cp.rnr_retry_count = 7;
	if (rdma_connect(id, &cp)) {
		perror("rdma_connect");
		return 2;
	}
	if (wait_event(ec, RDMA_CM_EVENT_ESTABLISHED, &ev)) {
		fprintf(stderr, "login failed\n");
		return 2;
	}
	rdma_ack_cm_event(ev);
	printf("logged in\n");
	fflush(stdout);

	for (;;) {
		struct pollfd p = { .fd = ec->fd, .events = POLLIN };

		if (poll(&p, 1, timeout_ms) <= 0) {
			printf("timeout\n");
			break;
		}
		if (rdma_get_cm_event(ec, &ev)) {
			perror("rdma_get_cm_event");
			break;
		}
		printf("event %s status %d\n", rdma_event_str(ev->event), ev->status);
		fflush(stdout);
		enum rdma_cm_event_type t = ev->event;
		rdma_ack_cm_event(ev);
		if (t == RDMA_CM_EVENT_DISCONNECTED || t == RDMA_CM_EVENT_DEVICE_REMOVAL)
			break;
	}
	rdma_destroy_qp(id);
	rdma_destroy_id(id);
	rdma_destroy_event_channel(ec);
	printf("done\n");
	return 0;
}
