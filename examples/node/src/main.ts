// A mnemo client in Node.js: TypeScript generated from the contract (`make gen` -> gen/ts) over Connect's
// gRPC transport, to the one gRPC address `mnemo server` prints.
//
//   MNEMO_API_KEY=... MNEMO_GRPC_ADDRESS=127.0.0.1:8288 npm start
//
// It creates an agent with two memory blocks, takes a streamed turn (printing tokens, tool calls and
// returns as they come), reads the agent's core memory, stores and searches archival memory, and shows how
// an error's stable reason is read. The last line it prints is a JSON summary (what the CI test checks).

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ErrorInfoSchema } from "../../../gen/ts/google/rpc/error_details_pb.js";
import { AgentSchema, AgentService } from "../../../gen/ts/mnemo/agent/v1/agent_pb.js";
import { BlockSchema, BlockService } from "../../../gen/ts/mnemo/memory/v1/block_pb.js";
import { PassageService } from "../../../gen/ts/mnemo/memory/v1/passage_pb.js";
import { MessageSchema, UserContentSchema } from "../../../gen/ts/mnemo/common/v1/message_pb.js";

const address = process.env.MNEMO_GRPC_ADDRESS ?? "127.0.0.1:8288";
const apiKey = process.env.MNEMO_API_KEY;
const model = process.env.MNEMO_MODEL ?? "openai/gpt-4o-mini";
if (!apiKey) {
  console.error("set MNEMO_API_KEY (printed by `mnemo server`)");
  process.exit(2);
}

// Every call carries the API key.
const withApiKey: Interceptor = (next) => async (request) => {
  request.header.set("authorization", `Bearer ${apiKey}`);
  return next(request);
};
const transport = createGrpcTransport({ baseUrl: `http://${address}`, interceptors: [withApiKey] });
const agents = createClient(AgentService, transport);
const blocks = createClient(BlockService, transport);
const passages = createClient(PassageService, transport);

/** The stable, machine-readable reason of a mnemo error (google.rpc.ErrorInfo in the status details). */
function reasonOf(error: ConnectError): string | undefined {
  return error.findDetails(ErrorInfoSchema)[0]?.reason;
}

async function main(): Promise<void> {
  // 1. An agent with a persona and a (still empty) block about its human.
  const { agent } = await agents.createAgent({
    agent: create(AgentSchema, { name: "node-example", model }),
    memoryBlocks: [
      create(BlockSchema, { label: "persona", value: "I am a concise, friendly assistant." }),
      create(BlockSchema, { label: "human", value: "", limit: 500 }),
    ],
  });
  if (!agent) throw new Error("CreateAgent returned no agent");
  console.log(`created ${agent.id} (${agent.model})`);

  // 2. A streamed turn: tokens as the model writes them, then each stored message, then the outcome.
  let streamed = "";
  const toolCalls: string[] = [];
  let stopReason = "";
  const turn = agents.streamMessage(
    {
      agentId: agent.id,
      messages: [
        create(MessageSchema, {
          content: { case: "user", value: create(UserContentSchema, { text: "Hi, I'm Ada. Please remember my name." }) },
        }),
      ],
      streamTokens: true,
    },
    { timeoutMs: 120_000 },
  );
  for await (const { event } of turn) {
    switch (event.case) {
      case "runId":
        console.log(`run ${event.value}`);
        break;
      case "delta":
        streamed += event.value.text;
        process.stdout.write(event.value.text);
        break;
      case "message": {
        const content = event.value.content;
        if (content.case === "toolCall" && content.value.toolCall) {
          toolCalls.push(content.value.toolCall.name);
          console.log(`\n-> ${content.value.toolCall.name}(${content.value.toolCall.arguments})`);
        } else if (content.case === "toolReturn") {
          console.log(`<- ${content.value.name}: ${content.value.content}`);
        }
        break;
      }
      case "outcome":
        stopReason = String(event.value.stopReason);
        console.log(`\nturn ended: steps=${event.value.usage?.stepCount ?? 0}`);
        break;
    }
  }

  // 3. Core memory: the blocks as the agent left them.
  const { blocks: memory } = await blocks.listBlocks({ agentId: agent.id });
  const core = Object.fromEntries(memory.map((block) => [block.label, block.value]));
  console.log("core memory:", core);

  // 4. Archival memory: store a passage, then search by meaning and words.
  await passages.createPassages({
    agentId: agent.id,
    text: "Ada's favourite tea is Earl Grey, with a slice of lemon.",
    embeddingModel: agent.embeddingModel,
  });
  const { matches } = await passages.searchPassages({
    agentId: agent.id,
    query: "which tea does Ada like?",
    topK: 3,
    embeddingModel: agent.embeddingModel,
  });
  const archival = matches.map((match) => match.passage?.text ?? "");
  console.log("archival search:", archival);

  // 5. Errors carry a gRPC code and a stable reason.
  let errorReason = "";
  try {
    await agents.getAgent({ agentId: "agent-does-not-exist" });
  } catch (error) {
    const connectError = ConnectError.from(error);
    if (connectError.code !== Code.NotFound) throw connectError;
    errorReason = reasonOf(connectError) ?? "";
    console.log(`GetAgent of an unknown id: ${Code[connectError.code]} ${errorReason}`);
  }

  console.log(
    JSON.stringify({ agentId: agent.id, streamed, toolCalls, stopReason, core, archival, errorReason }),
  );
}

main().catch((error: unknown) => {
  const connectError = ConnectError.from(error);
  console.error(`mnemo: ${Code[connectError.code]}: ${connectError.rawMessage} (${reasonOf(connectError) ?? "no reason"})`);
  process.exit(1);
});
