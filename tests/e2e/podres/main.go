// Command podres reads the kubelet's pod-resources API (v1): the devices
// each resource can allocate, and which container holds which device.
// With -want it waits, bounded by -timeout, until a resource's allocatable
// count is the given number and prints how long that took.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresources "k8s.io/kubelet/pkg/apis/podresources/v1"
)

func main() {
	socket := flag.String("socket", "/var/lib/kubelet/pod-resources/kubelet.sock", "the kubelet's pod-resources socket")
	resource := flag.String("resource", "", "the resource to wait for (with -want)")
	want := flag.Int("want", -1, "wait until the resource has this many allocatable devices")
	timeout := flag.Duration("timeout", 30*time.Second, "longest wait")
	list := flag.Bool("list", false, "print the devices assigned to each container")
	flag.Parse()

	conn, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("connect: %v", err)
	}
	defer conn.Close()
	client := podresources.NewPodResourcesListerClient(conn)

	if *list {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.List(ctx, &podresources.ListPodResourcesRequest{})
		if err != nil {
			fail("List: %v", err)
		}
		for _, p := range resp.PodResources {
			for _, c := range p.Containers {
				for _, d := range c.Devices {
					ids := append([]string(nil), d.DeviceIds...)
					sort.Strings(ids)
					fmt.Printf("%s/%s %s %s %s\n", p.Namespace, p.Name, c.Name, d.ResourceName, strings.Join(ids, ","))
				}
			}
		}
		return
	}

	start := time.Now()
	deadline := start.Add(*timeout)
	last := -1
	for {
		n, err := allocatable(client, *resource)
		if err == nil {
			last = n
			if *want < 0 {
				fmt.Printf("%s %d\n", *resource, n)
				return
			}
			if n == *want {
				fmt.Printf("%s %d after %s\n", *resource, n, time.Since(start).Round(time.Microsecond))
				return
			}
		}
		if time.Now().After(deadline) {
			fail("%s: %d allocatable, not %d, after %s (last error: %v)", *resource, last, *want, *timeout, err)
		}
		// The API has no watch: ask again shortly.
		time.Sleep(2 * time.Millisecond)
	}
}

func allocatable(client podresources.PodResourcesListerClient, resource string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.GetAllocatableResources(ctx, &podresources.AllocatableResourcesRequest{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range resp.Devices {
		if d.ResourceName == resource {
			n += len(d.DeviceIds)
		}
	}
	return n, nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "podres: "+format+"\n", args...)
	os.Exit(1)
}
