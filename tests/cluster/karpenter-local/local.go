package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/awslabs/operatorpkg/status"
	"github.com/samber/lo"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"sigs.k8s.io/karpenter/kwok/apis/v1alpha1"
	kwok "sigs.k8s.io/karpenter/kwok/cloudprovider"
	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/scheduling"
)

const (
	// A KWOKNodeClass with this label set to "true" launches real nodes; its
	// nodeRegistrationDelay is the emulated instance boot before the node starts.
	RealNodesLabel = "warmpool.io/real-nodes"
	providerPrefix = "local://"
	// The one instance type of real nodes: what is left of this machine for one node.
	InstanceType = "local-half"
	Zone         = "local-a"
)

// A node name as node.sh accepts it (a DNS label of at most 40 characters).
var validName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$`)

// One real node this provider started.
type instance struct {
	name  string
	claim *v1.NodeClaim
	// deleting: `node down` runs; the NodeClaim is gone from the cloud once it has finished.
	deleting bool
}

// Local launches real nodes for real-node classes and hands everything else to KWOK's provider.
type Local struct {
	kube       client.Client
	kwok       *kwok.CloudProvider
	script     string
	clusterDir string
	maxNodes   int
	reserve    string
	real       *cloudprovider.InstanceType

	mu    sync.Mutex
	nodes map[string]*instance // by provider ID
}

func NewLocal(ctx context.Context, kube client.Client, delegate *kwok.CloudProvider) (*Local, error) {
	script := os.Getenv("WARMPOOL_NODE_SCRIPT")
	if script == "" {
		return nil, fmt.Errorf("WARMPOOL_NODE_SCRIPT (tests/cluster/cluster.sh) is not set")
	}
	maxNodes := 3
	if v := os.Getenv("WARMPOOL_MAX_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("WARMPOOL_MAX_NODES=%q is not a positive number", v)
		}
		maxNodes = n
	}
	reserve := lo.CoalesceOrEmpty(os.Getenv("WARMPOOL_NODE_RESERVE"), "cpu=1,memory=12Gi")
	real, err := localInstanceType(reserve)
	if err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("real nodes", "instanceType", real.Name, "allocatable", real.Allocatable(), "maxNodes", maxNodes)
	return &Local{
		kube:       kube,
		kwok:       delegate,
		script:     script,
		clusterDir: os.Getenv("WARMPOOL_CLUSTER_DIR"),
		maxNodes:   maxNodes,
		reserve:    reserve,
		real:       real,
		nodes:      map[string]*instance{},
	}, nil
}

// The instance type of a real node: this machine's CPUs and memory (every kubelet here reports
// the whole VM) less the node's systemReserved and the kubelet's hard eviction threshold, so
// that Karpenter never packs more than the kubelet will admit.
func localInstanceType(reserve string) (*cloudprovider.InstanceType, error) {
	memory, err := memTotal()
	if err != nil {
		return nil, err
	}
	reserved := corev1.ResourceList{}
	for _, kv := range strings.Split(reserve, ",") {
		k, v, ok := strings.Cut(kv, "=")
		q, err := resource.ParseQuantity(v)
		if !ok || err != nil {
			return nil, fmt.Errorf("WARMPOOL_NODE_RESERVE: %q is not name=quantity", kv)
		}
		reserved[corev1.ResourceName(k)] = q
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memory, resource.BinarySI),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
	requirements := scheduling.NewRequirements(
		scheduling.NewRequirement(corev1.LabelInstanceTypeStable, corev1.NodeSelectorOpIn, InstanceType),
		scheduling.NewRequirement(corev1.LabelArchStable, corev1.NodeSelectorOpIn, runtime.GOARCH),
		scheduling.NewRequirement(corev1.LabelOSStable, corev1.NodeSelectorOpIn, "linux"),
		scheduling.NewRequirement(corev1.LabelTopologyZone, corev1.NodeSelectorOpIn, Zone),
		scheduling.NewRequirement(v1.CapacityTypeLabelKey, corev1.NodeSelectorOpIn, v1.CapacityTypeOnDemand),
		scheduling.NewRequirement(v1alpha1.InstanceSizeLabelKey, corev1.NodeSelectorOpIn, "half"),
		scheduling.NewRequirement(v1alpha1.InstanceFamilyLabelKey, corev1.NodeSelectorOpIn, "local"),
		scheduling.NewRequirement(v1alpha1.InstanceCPULabelKey, corev1.NodeSelectorOpIn, capacity.Cpu().String()),
		scheduling.NewRequirement(v1alpha1.InstanceMemoryLabelKey, corev1.NodeSelectorOpIn, capacity.Memory().String()),
	)
	return &cloudprovider.InstanceType{
		Name:         InstanceType,
		Requirements: requirements,
		Offerings: cloudprovider.Offerings{{
			Requirements: scheduling.NewRequirements(
				scheduling.NewRequirement(corev1.LabelTopologyZone, corev1.NodeSelectorOpIn, Zone),
				scheduling.NewRequirement(v1.CapacityTypeLabelKey, corev1.NodeSelectorOpIn, v1.CapacityTypeOnDemand),
			),
			Price:     0.05,
			Available: true,
		}},
		Capacity: capacity,
		Overhead: &cloudprovider.InstanceTypeOverhead{
			SystemReserved: reserved,
			// The kubelet's evictionHard (node.sh) and a margin for rounding.
			EvictionThreshold: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("200Mi")},
		},
	}, nil
}

func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			return kib * 1024, err
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// The KWOKNodeClass a NodeClaim or NodePool names, and whether it launches real nodes.
func (l *Local) class(ctx context.Context, name string) (*v1alpha1.KWOKNodeClass, bool) {
	class := &v1alpha1.KWOKNodeClass{}
	if err := l.kube.Get(ctx, types.NamespacedName{Name: name}, class); err != nil {
		return nil, false
	}
	return class, class.Labels[RealNodesLabel] == "true"
}

func nodeName(claim string) string {
	if validName.MatchString(claim) {
		return claim
	}
	sum := sha256.Sum256([]byte(claim))
	return "rn-" + hex.EncodeToString(sum[:])[:12]
}

func (l *Local) Create(ctx context.Context, nodeClaim *v1.NodeClaim) (*v1.NodeClaim, error) {
	if nodeClaim.Spec.NodeClassRef == nil {
		return l.kwok.Create(ctx, nodeClaim)
	}
	class, real := l.class(ctx, nodeClaim.Spec.NodeClassRef.Name)
	if !real {
		return l.kwok.Create(ctx, nodeClaim)
	}
	if !scheduling.NewNodeSelectorRequirementsWithMinValues(nodeClaim.Spec.Requirements...).
		Get(corev1.LabelInstanceTypeStable).Has(InstanceType) {
		return nil, cloudprovider.NewInsufficientCapacityError(fmt.Errorf("real nodes are of instance type %s only", InstanceType))
	}
	name := nodeName(nodeClaim.Name)
	providerID := providerPrefix + name
	l.mu.Lock()
	if len(l.nodes) >= l.maxNodes {
		l.mu.Unlock()
		return nil, cloudprovider.NewInsufficientCapacityError(fmt.Errorf("at most %d real nodes run on this machine", l.maxNodes))
	}
	claim := l.toNodeClaim(nodeClaim, name, providerID)
	l.nodes[providerID] = &instance{name: name, claim: claim}
	l.mu.Unlock()

	boot := class.Spec.NodeRegistrationDelay.Duration
	log.FromContext(ctx).Info("launching a real node", "node", name, "bootDelay", boot)
	// Create must not block: the node starts in the background after the emulated boot, and
	// registers with the provider ID and Karpenter's unregistered taint, as a cloud instance does.
	go l.start(context.WithoutCancel(ctx), nodeClaim.Name, name, providerID, boot)
	return claim, nil
}

func (l *Local) start(ctx context.Context, claimName, name, providerID string, boot time.Duration) {
	time.Sleep(boot)
	started := time.Now()
	out, err := l.run(ctx, "node", "up", name, "--provider-id", providerID,
		"--taint", v1.UnregisteredTaintKey+"=:NoExecute", "--reserve", l.reserve)
	if err == nil {
		log.FromContext(ctx).Info("real node up", "node", name, "took", time.Since(started).Round(time.Millisecond))
		return
	}
	// Fail fast (Karpenter would wait 15 minutes for a registration): the NodeClaim goes, and
	// Karpenter launches another for the pods that still need one.
	log.FromContext(ctx).Error(err, "a real node failed to start", "node", name, "output", out)
	l.mu.Lock()
	delete(l.nodes, providerID)
	l.mu.Unlock()
	_, _ = l.run(ctx, "node", "down", name)
	claim := &v1.NodeClaim{}
	if l.kube.Get(ctx, types.NamespacedName{Name: claimName}, claim) == nil {
		_ = l.kube.Delete(ctx, claim)
	}
}

func (l *Local) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, l.script, args...)
	cmd.Env = append(os.Environ(), "WARMPOOL_CLUSTER_DIR="+l.clusterDir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *Local) toNodeClaim(nodeClaim *v1.NodeClaim, name, providerID string) *v1.NodeClaim {
	labels := make(map[string]string, len(nodeClaim.Labels)+8)
	maps.Copy(labels, nodeClaim.Labels)
	for _, r := range nodeClaim.Spec.Requirements {
		if len(r.Values) == 1 && r.Operator == corev1.NodeSelectorOpIn {
			labels[r.Key] = r.Values[0]
		}
	}
	for _, r := range l.real.Requirements {
		if r.Len() == 1 && r.Operator() == corev1.NodeSelectorOpIn {
			labels[r.Key] = r.Values()[0]
		}
	}
	labels[corev1.LabelHostname] = name
	return &v1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: nodeClaim.Name, Labels: labels, Annotations: nodeClaim.Annotations},
		Status: v1.NodeClaimStatus{
			NodeName:    name,
			ProviderID:  providerID,
			Capacity:    l.real.Capacity,
			Allocatable: l.real.Allocatable(),
		},
	}
}

func (l *Local) Delete(ctx context.Context, nodeClaim *v1.NodeClaim) error {
	providerID := nodeClaim.Status.ProviderID
	if !strings.HasPrefix(providerID, providerPrefix) {
		return l.kwok.Delete(ctx, nodeClaim)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	inst, ok := l.nodes[providerID]
	if !ok {
		return cloudprovider.NewNodeClaimNotFoundError(fmt.Errorf("real node %s is stopped", providerID))
	}
	if !inst.deleting {
		inst.deleting = true
		log.FromContext(ctx).Info("stopping a real node", "node", inst.name)
		go func() {
			ctx := context.WithoutCancel(ctx)
			if out, err := l.run(ctx, "node", "down", inst.name); err != nil {
				log.FromContext(ctx).Error(err, "a real node did not stop cleanly", "node", inst.name, "output", out)
			}
			l.mu.Lock()
			delete(l.nodes, providerID)
			l.mu.Unlock()
		}()
	}
	// Deletion triggered: Karpenter asks again until the node is gone.
	return nil
}

func (l *Local) Get(ctx context.Context, providerID string) (*v1.NodeClaim, error) {
	if !strings.HasPrefix(providerID, providerPrefix) {
		return l.kwok.Get(ctx, providerID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	inst, ok := l.nodes[providerID]
	if !ok || inst.deleting {
		return nil, cloudprovider.NewNodeClaimNotFoundError(fmt.Errorf("real node %s not found", providerID))
	}
	return inst.claim.DeepCopy(), nil
}

func (l *Local) List(ctx context.Context) ([]*v1.NodeClaim, error) {
	claims, err := l.kwok.List(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, inst := range l.nodes {
		if !inst.deleting {
			claims = append(claims, inst.claim.DeepCopy())
		}
	}
	return claims, nil
}

func (l *Local) GetInstanceTypes(ctx context.Context, nodePool *v1.NodePool) ([]*cloudprovider.InstanceType, error) {
	if nodePool != nil && nodePool.Spec.Template.Spec.NodeClassRef != nil {
		if _, real := l.class(ctx, nodePool.Spec.Template.Spec.NodeClassRef.Name); real {
			return []*cloudprovider.InstanceType{l.real}, nil
		}
	}
	return l.kwok.GetInstanceTypes(ctx, nodePool)
}

func (l *Local) IsDrifted(ctx context.Context, nodeClaim *v1.NodeClaim) (cloudprovider.DriftReason, error) {
	return "", nil
}

// KWOK's (NodeRepair is off by default; without a node lifecycle controller here a dead
// kubelet's Node stays Ready anyway).
func (l *Local) RepairPolicies() []cloudprovider.RepairPolicy {
	return l.kwok.RepairPolicies()
}

func (l *Local) Name() string { return "local" }

func (l *Local) GetSupportedNodeClasses() []status.Object {
	return l.kwok.GetSupportedNodeClasses()
}
