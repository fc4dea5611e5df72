package privmesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	fhev1 "github.com/privmesh/privmesh/clients/go/gen/privmesh/fhe/v1"
	flv1 "github.com/privmesh/privmesh/clients/go/gen/privmesh/fl/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// ChunkBytes is the most data one chunk of the fhe-inference and fl-coordinator streams carries.
const ChunkBytes = 1 << 20

// KeyPart is one part of a client's FHE key set, serialized (crypto context, public key, relinearization key).
type KeyPart struct {
	Kind fhev1.KeyPartKind
	Data []byte
}

// RegisterKeys opens an fhe-inference session: a copy of header whose KeyParts are set from parts (kind,
// size, SHA-256), then each part's chunks in order.
func RegisterKeys(ctx context.Context, client fhev1.FHEInferenceClient, header *fhev1.RegisterKeysHeader,
	parts []KeyPart, opts ...grpc.CallOption) (*fhev1.Session, error) {
	header = proto.CloneOf(header)
	header.KeyParts = nil
	for _, p := range parts {
		digest := sha256.Sum256(p.Data)
		header.KeyParts = append(header.KeyParts, &fhev1.KeyPartInfo{Kind: p.Kind,
			SizeBytes: uint64(len(p.Data)), Sha256: digest[:]})
	}
	stream, err := client.RegisterKeys(ctx, opts...)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&fhev1.RegisterKeysRequest{Payload: &fhev1.RegisterKeysRequest_Header{Header: header}})
	for _, p := range parts {
		for offset := 0; err == nil && offset < len(p.Data); offset += ChunkBytes {
			chunk := &fhev1.KeyChunk{Kind: p.Kind, Offset: uint64(offset), Data: p.Data[offset:min(offset+ChunkBytes, len(p.Data))]}
			err = stream.Send(&fhev1.RegisterKeysRequest{Payload: &fhev1.RegisterKeysRequest_Chunk{Chunk: chunk}})
		}
	}
	// A send error means the server ended the stream; its status comes with CloseAndRecv.
	reply, recvErr := stream.CloseAndRecv()
	if recvErr != nil {
		return nil, recvErr
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return reply.GetSession(), nil
}

// Batch is one Infer input or output: its id, how many samples it packs, and its serialized ciphertexts.
type Batch struct {
	InputID     uint32
	SampleCount uint32
	Ciphertexts [][]byte
}

// Infer runs encrypted inference in session: every input is sent (announced, then its ciphertexts' chunks)
// while the outputs are read back and reassembled; they come in the order the server finishes them.
func Infer(ctx context.Context, client fhev1.FHEInferenceClient, session string, inputs []Batch,
	opts ...grpc.CallOption) ([]Batch, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Infer(ctx, opts...)
	if err != nil {
		return nil, err
	}
	sent := make(chan error, 1)
	go func() { sent <- sendInputs(stream, session, inputs) }()
	var outputs []Batch
	var current *Batch
	var sizes []uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if out := msg.GetOutput(); out != nil {
			outputs = append(outputs, Batch{InputID: out.GetInputId(), SampleCount: out.GetSampleCount(),
				Ciphertexts: make([][]byte, len(out.GetCiphertexts()))})
			current = &outputs[len(outputs)-1]
			sizes = sizes[:0]
			for _, c := range out.GetCiphertexts() {
				sizes = append(sizes, c.GetSizeBytes())
			}
			continue
		}
		chunk := msg.GetChunk()
		if current == nil || chunk.GetInputId() != current.InputID || int(chunk.GetCiphertextIndex()) >= len(sizes) {
			return nil, fmt.Errorf("privmesh: Infer: a chunk does not belong to the announced output")
		}
		i := chunk.GetCiphertextIndex()
		if uint64(len(current.Ciphertexts[i])) != chunk.GetOffset() ||
			uint64(len(current.Ciphertexts[i])+len(chunk.GetData())) > sizes[i] {
			return nil, fmt.Errorf("privmesh: Infer: output %d ciphertext %d: chunk out of order", current.InputID, i)
		}
		current.Ciphertexts[i] = append(current.Ciphertexts[i], chunk.GetData()...)
	}
	if err := <-sent; err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return outputs, nil
}

func sendInputs(stream grpc.BidiStreamingClient[fhev1.InferRequest, fhev1.InferResponse], session string, inputs []Batch) error {
	if err := stream.Send(&fhev1.InferRequest{Payload: &fhev1.InferRequest_Start{Start: &fhev1.InferStart{Session: session}}}); err != nil {
		return err
	}
	for _, in := range inputs {
		announce := &fhev1.InferInput{InputId: in.InputID, SampleCount: in.SampleCount}
		for _, c := range in.Ciphertexts {
			announce.Ciphertexts = append(announce.Ciphertexts, &fhev1.CiphertextInfo{SizeBytes: uint64(len(c))})
		}
		if err := stream.Send(&fhev1.InferRequest{Payload: &fhev1.InferRequest_Input{Input: announce}}); err != nil {
			return err
		}
		for index, c := range in.Ciphertexts {
			for offset := 0; offset < len(c); offset += ChunkBytes {
				chunk := &fhev1.CiphertextChunk{InputId: in.InputID, CiphertextIndex: uint32(index),
					Offset: uint64(offset), Data: c[offset:min(offset+ChunkBytes, len(c))]}
				if err := stream.Send(&fhev1.InferRequest{Payload: &fhev1.InferRequest_Chunk{Chunk: chunk}}); err != nil {
					return err
				}
			}
		}
	}
	return stream.CloseSend()
}

// DownloadModel reads an fl-coordinator GetModel stream: the header, then the model's bytes, checked
// against the header's size and SHA-256.
func DownloadModel(ctx context.Context, client flv1.FLCoordinatorClient, req *flv1.GetModelRequest,
	opts ...grpc.CallOption) (*flv1.ModelHeader, []byte, error) {
	stream, err := client.GetModel(ctx, req, opts...)
	if err != nil {
		return nil, nil, err
	}
	var header *flv1.ModelHeader
	var data []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		if h := msg.GetHeader(); h != nil {
			header = h
			continue
		}
		chunk := msg.GetChunk()
		if header == nil || chunk.GetOffset() != uint64(len(data)) ||
			uint64(len(data)+len(chunk.GetData())) > header.GetSizeBytes() {
			return nil, nil, fmt.Errorf("privmesh: GetModel: chunk out of order or beyond the announced size")
		}
		data = append(data, chunk.GetData()...)
	}
	if header == nil || uint64(len(data)) != header.GetSizeBytes() {
		return nil, nil, fmt.Errorf("privmesh: GetModel: the stream ended before the whole model")
	}
	if digest := sha256.Sum256(data); header.GetSha256() != "" && hex.EncodeToString(digest[:]) != header.GetSha256() {
		return nil, nil, fmt.Errorf("privmesh: GetModel: the model's SHA-256 differs from the header's")
	}
	return header, data, nil
}
