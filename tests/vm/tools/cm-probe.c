/*
 * cm-probe: listen with librdmacm on <addr>:<port>, print what an
 * RDMA_CM_EVENT_CONNECT_REQUEST carries (conn params as seen by the passive
 * side, private data = the SRP_LOGIN_REQ), then reject it and exit.
 * Used by tests/vm/initiator-facts.sh to record what the kernel SRP
 * initiator sends. Build: cc -O2 -o cm-probe cm-probe.c -lrdmacm -libverbs
 */
#include <arpa/inet.h>
#include <rdma/rdma_cma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	const char *addr = argc > 1 ? argv[1] : "169.254.77.1";
	int port = argc > 2 ? atoi(argv[2]) : 5555;
	int count = argc > 3 ? atoi(argv[3]) : 1;
	struct rdma_event_channel *ec = rdma_create_event_channel();
	struct rdma_cm_id *id;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };

	if (!ec || rdma_create_id(ec, &id, NULL, RDMA_PS_TCP)) {
		perror("rdma_create_id");
		return 1;
	}
	inet_pton(AF_INET, addr, &sin.sin_addr);
	if (rdma_bind_addr(id, (struct sockaddr *)&sin) || rdma_listen(id, 8)) {
		perror("bind/listen");
		return 1;
	}
	printf("cm-probe listening %s:%d\n", addr, port);
	fflush(stdout);
	while (count > 0) {
		struct rdma_cm_event *ev;
		if (rdma_get_cm_event(ec, &ev)) {
			perror("rdma_get_cm_event");
			return 1;
		}
		printf("event %s\n", rdma_event_str(ev->event));
		if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
			struct rdma_conn_param *c = &ev->param.conn;
			const unsigned char *p = c->private_data;
			printf("conn: responder_resources=%u initiator_depth=%u "
			       "flow_control=%u retry_count=%u rnr_retry_count=%u "
			       "srq=%u qp_num=0x%x private_data_len=%u\n",
			       c->responder_resources, c->initiator_depth,
			       c->flow_control, c->retry_count,
			       c->rnr_retry_count, c->srq, c->qp_num,
			       c->private_data_len);
			printf("private_data:");
			for (unsigned i = 0; i < c->private_data_len; i++)
				printf("%s%02x", i % 16 ? " " : "\n  ", p[i]);
			printf("\n");
			/* struct srp_login_req_rdma (include/scsi/srp.h) */
			if (c->private_data_len >= 50)
				printf("srp_login_req_rdma: opcode=0x%02x "
				       "req_buf_fmt=0x%04x req_flags=0x%02x "
				       "req_it_iu_len=%u imm_data_offset=%u\n",
				       p[11], (p[8] << 8) | p[9], p[10],
				       (p[12] << 24) | (p[13] << 16) |
				       (p[14] << 8) | p[15],
				       (p[48] << 8) | p[49]);
			struct ibv_device_attr da;
			if (!ibv_query_device(ev->id->verbs, &da))
				printf("device: max_qp_rd_atom=%d max_qp_init_rd_atom=%d "
				       "max_sge=%d max_qp_wr=%d max_cqe=%d max_mr_size=%llu\n",
				       da.max_qp_rd_atom, da.max_qp_init_rd_atom,
				       da.max_sge, da.max_qp_wr, da.max_cqe,
				       (unsigned long long)da.max_mr_size);
			rdma_reject(ev->id, NULL, 0);
			count--;
		}
		fflush(stdout);
		rdma_ack_cm_event(ev);
	}
	return 0;
}
