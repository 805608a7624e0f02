// Karpenter with a cloud provider that launches real local nodes (a kubelet and a containerd
// each, tests/cluster/node.sh) for the NodeClaims of NodePools whose KWOKNodeClass is labelled
// warmpool.io/real-nodes=true, and delegates every other NodeClaim to Karpenter's own KWOK
// provider, unchanged. Test harness of the warmpool project, never product code; the model is
// Karpenter's kwok/main.go.
//
// Configuration (environment, besides Karpenter's own):
//
//	WARMPOOL_NODE_SCRIPT  tests/cluster/cluster.sh of the checkout (required)
//	WARMPOOL_CLUSTER_DIR  the control plane's folder, passed on to the script
//	WARMPOOL_MAX_NODES    real nodes at once (default 3: the host paths real nodes share and
//	                      this machine's two cores cap the pool at a few)
//	WARMPOOL_NODE_RESERVE systemReserved of each node, "cpu=1,memory=12Gi" by default: each
//	                      kubelet reports the whole VM, so a node is sold as what is left
package main

import (
	"sigs.k8s.io/controller-runtime/pkg/log"

	kwok "sigs.k8s.io/karpenter/kwok/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/overlay"
	"sigs.k8s.io/karpenter/pkg/controllers"
	"sigs.k8s.io/karpenter/pkg/controllers/state"
	"sigs.k8s.io/karpenter/pkg/operator"
)

func main() {
	ctx, op := operator.NewOperator()
	instanceTypes, err := kwok.ConstructInstanceTypes(ctx)
	if err != nil {
		log.FromContext(ctx).Error(err, "failed constructing instance types")
	}
	local, err := NewLocal(ctx, op.GetClient(), kwok.NewCloudProvider(ctx, op.GetClient(), instanceTypes))
	if err != nil {
		log.FromContext(ctx).Error(err, "cannot launch real nodes")
		panic(err)
	}
	cloudProvider := overlay.Decorate(local, op.GetClient(), op.InstanceTypeStore)
	clusterState := state.NewCluster(op.Clock, op.GetClient(), cloudProvider)
	op.
		WithControllers(ctx, controllers.NewControllers(
			ctx,
			op.Manager,
			op.Clock,
			op.GetClient(),
			op.EventRecorder,
			cloudProvider,
			local,
			clusterState,
			op.InstanceTypeStore,
		)...).Start(ctx)
}
