/* C shim: rdma-core implements several verbs as static inline functions in
 * its headers; calling them from C guarantees we use the real ones. */
#include <infiniband/verbs.h>

int srptd_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	return ibv_post_send(qp, wr, bad);
}

int srptd_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	return ibv_post_recv(qp, wr, bad);
}

int srptd_ibv_post_srq_recv(struct ibv_srq *srq, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	return ibv_post_srq_recv(srq, wr, bad);
}

int srptd_ibv_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
	return ibv_poll_cq(cq, n, wc);
}

int srptd_ibv_req_notify_cq(struct ibv_cq *cq, int solicited_only)
{
	return ibv_req_notify_cq(cq, solicited_only);
}

int srptd_ibv_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
	return ibv_query_port(ctx, port, attr);
}

#include <stddef.h>
#include <rdma/rdma_cma.h>
#include <infiniband/ib.h>

/* Sizes and offsets of the structs srptd passes across the FFI, so tests can
 * check rdma-sys's (partly hand-written) layouts against the real headers. */
enum {
	SRPTD_ABI_N = 16,
};

int srptd_abi_layout(size_t *out, int n)
{
	size_t v[SRPTD_ABI_N] = {
		sizeof(struct ibv_send_wr),
		offsetof(struct ibv_send_wr, wr),
		offsetof(struct ibv_send_wr, qp_type),
		sizeof(struct ibv_recv_wr),
		sizeof(struct ibv_sge),
		sizeof(struct ibv_wc),
		offsetof(struct ibv_wc, qp_num),
		sizeof(struct ibv_port_attr),
		sizeof(struct ibv_qp_attr),
		sizeof(struct ibv_qp_init_attr),
		sizeof(struct rdma_cm_event),
		offsetof(struct rdma_cm_event, param),
		sizeof(struct rdma_conn_param),
		sizeof(struct rdma_cm_id),
		sizeof(struct sockaddr_ib),
		offsetof(struct sockaddr_ib, sib_sid),
	};
	int i;

	for (i = 0; i < n && i < SRPTD_ABI_N; i++)
		out[i] = v[i];
	return SRPTD_ABI_N;
}

#include <rbd/librbd.h>

/* Sizes and offsets of librbd's structs bound by hand in rbd.rs. */
int srptd_rbd_layout(size_t *out, int n)
{
	size_t v[] = {
		sizeof(rbd_image_info_t),
		offsetof(rbd_image_info_t, order),
		offsetof(rbd_image_info_t, block_name_prefix),
		offsetof(rbd_image_info_t, parent_pool),
		offsetof(rbd_image_info_t, parent_name),
	};
	int i, count = (int)(sizeof(v) / sizeof(v[0]));

	for (i = 0; i < n && i < count; i++)
		out[i] = v[i];
	return count;
}
